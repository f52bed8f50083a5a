"""Worker metrics: any worker's scrape reports every worker's samples, labelled so they add up."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tollgate_scorer.settings import ScorerSettings
from tollgate_scorer.workers import WorkerMetrics, shared_registry


def _registry(count: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("tollgate_scorer_things", "things", ["model"], registry=registry).labels("m").inc(count)
    return registry


def test_each_worker_answers_for_all_and_counters_sum(tmp_path: Path) -> None:
    first, second = WorkerMetrics(_registry(3), tmp_path, 0), WorkerMetrics(_registry(4), tmp_path, 1)
    second.write_snapshot()
    served = CollectorRegistry(auto_describe=False)
    served.register(first)
    text = generate_latest(served).decode()
    assert text.count("# HELP tollgate_scorer_things_total") == 1  # one family, not one per worker
    samples = {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tollgate_scorer_things_total"
    }
    assert samples == {"0": 3.0, "1": 4.0}


def test_a_lone_scorer_serves_its_own_registry(tmp_path: Path) -> None:
    own = _registry(1)
    served, loop = shared_registry(own, ScorerSettings(worker_index=None))
    assert served is own and loop is None
    served, loop = shared_registry(own, ScorerSettings(worker_index=2, worker_metrics_dir=str(tmp_path)))
    assert served is not own and loop is not None and (tmp_path / "worker-2.prom").exists()


def test_workers_never_share_a_spool(tmp_path: Path) -> None:
    paths = {ScorerSettings(log_spool_dir=str(tmp_path), worker_index=i).spool_path() for i in range(3)}
    assert len(paths) == 3 and ScorerSettings(log_spool_dir=str(tmp_path)).spool_path() == tmp_path
