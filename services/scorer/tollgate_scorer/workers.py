"""N scorer worker processes on one port: the supervisor that starts them, and their shared ``/metrics``.

``TOLLGATE_SCORER_WORKERS=N`` (N > 1) makes ``python -m tollgate_scorer`` a supervisor: it starts N
workers (``python -m tollgate_scorer`` again, with ``TOLLGATE_SCORER_WORKER_INDEX=i``), forwards
SIGTERM/SIGINT to them, and restarts a worker that dies. Each worker is a whole scorer: it binds the HTTP
port with ``SO_REUSEPORT`` (the kernel spreads new connections over the workers), follows the model
lifecycle itself, and has its own inference-log producer and spool (the worker's instance id is
``<instance_id>-w<i>``), so one worker's crash loses no log event of the others'. Its Kafka stage's
transactional producers are per input partition, like every stage's: a partition that moves to another
worker fences only the producer of that partition. The workers die with the supervisor (``PR_SET_PDEATHSIG``).

Metrics: a scrape reaches one worker, chosen by the kernel. Every worker writes a snapshot of its own
metrics to a shared folder once a second (and right before it answers a scrape), and answers ``/metrics``
with every worker's families, each sample labelled ``worker="<i>"``. Counters add up across workers:
the scorer's total is the sum over ``worker`` (``sum without (worker) (...)``); gauges are per worker
(a worker's models, backlog, Kafka connection). Another worker's figures are at most about a second old.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tollgate_scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

WORKER_LABEL = "worker"
_PR_SET_PDEATHSIG = 1
_SNAPSHOT_EVERY_S = 1.0
_RESTART_BACKOFF_S = (0.5, 30.0)
_QUICK_EXIT_S = 10.0  # a worker that exits this soon after starting failed to start
_MAX_QUICK_EXITS = 5  # ... this many times in a row: the supervisor gives up


# ---------------------------------------------------------------------------------------------- metrics


def _relabel(metric: Metric, worker: str, into: dict[str, Metric]) -> None:
    merged = into.get(metric.name)
    if merged is None:
        merged = into[metric.name] = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    for sample in metric.samples:
        merged.samples.append(sample._replace(labels={**sample.labels, WORKER_LABEL: worker}))


class WorkerMetrics(Collector):
    """One worker's view of every worker's metrics (see the module docstring)."""

    def __init__(self, own: CollectorRegistry, folder: Path, worker: int) -> None:
        self._own = own
        self._folder = folder
        self._worker = str(worker)
        self._path = folder / f"worker-{worker}.prom"

    def write_snapshot(self) -> None:
        """This worker's metrics as text, replaced atomically so a reader never sees half a file."""
        self._folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(generate_latest(self._own))
        tmp.replace(self._path)

    def _others(self) -> Iterator[tuple[str, Iterable[Metric]]]:
        for path in sorted(self._folder.glob("worker-*.prom")):
            worker = path.stem.removeprefix("worker-")
            if worker == self._worker:
                continue
            try:
                text = path.read_text()
            except OSError:  # replaced while being read; its next snapshot will be there
                continue
            yield worker, text_string_to_metric_families(text)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for metric in self._own.collect():
            _relabel(metric, self._worker, families)
        for worker, metrics in self._others():
            for metric in metrics:
                _relabel(metric, worker, families)
        yield from families.values()

    async def run(self) -> None:
        """Keep this worker's snapshot fresh for the others' scrapes."""
        while True:
            try:
                await asyncio.to_thread(self.write_snapshot)
            except OSError as exc:
                log.warning("scorer worker %s: metrics snapshot not written: %s", self._worker, exc)
            await asyncio.sleep(_SNAPSHOT_EVERY_S)


def shared_registry(own: CollectorRegistry, settings: ScorerSettings) -> tuple[CollectorRegistry, Any]:
    """The registry ``/metrics`` serves, and a loop to run (None for a lone process)."""
    if settings.worker_index is None or settings.worker_metrics_dir is None:
        return own, None
    collector = WorkerMetrics(own, Path(settings.worker_metrics_dir), settings.worker_index)
    collector.write_snapshot()
    served = CollectorRegistry(auto_describe=False)
    served.register(collector)
    return served, collector.run


# ---------------------------------------------------------------------------------------------- supervisor


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts ``workers`` scorer processes and keeps them running until SIGTERM/SIGINT."""

    def __init__(self, settings: ScorerSettings, metrics_dir: Path | None = None) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir or Path(tempfile.mkdtemp(prefix="tollgate-scorer-metrics-"))
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.quick_exits: dict[int, int] = {}
        self.stopping = False

    def _env(self, index: int) -> dict[str, str]:
        return {
            **os.environ,
            "TOLLGATE_SCORER_WORKER_INDEX": str(index),
            "TOLLGATE_SCORER_INSTANCE_ID": f"{self.settings.instance_id}-w{index}",
            "TOLLGATE_SCORER_WORKER_METRICS_DIR": str(self.metrics_dir),
        }

    def spawn(self, index: int) -> None:
        self.children[index] = subprocess.Popen(
            [sys.executable, "-m", "tollgate_scorer"], env=self._env(index), preexec_fn=_die_with_parent
        )
        self.started_at[index] = time.monotonic()
        log.info("scorer: worker %d started (pid %d)", index, self.children[index].pid)

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        for index in range(self.settings.workers):
            self.spawn(index)
        restart_at: dict[int, float] = {}
        try:
            while not self.stopping:
                now = time.monotonic()
                for index, child in list(self.children.items()):
                    code = child.poll()
                    if code is None or index in restart_at:
                        continue
                    quick = now - self.started_at[index] < _QUICK_EXIT_S
                    self.quick_exits[index] = self.quick_exits.get(index, 0) + 1 if quick else 0
                    if self.quick_exits[index] >= _MAX_QUICK_EXITS:
                        log.error(
                            "scorer: worker %d failed %d times on start; giving up", index, _MAX_QUICK_EXITS
                        )
                        return 1
                    delay = min(_RESTART_BACKOFF_S[0] * 2 ** self.quick_exits[index], _RESTART_BACKOFF_S[1])
                    log.warning("scorer: worker %d exited with %s; restarting in %.1f s", index, code, delay)
                    restart_at[index] = now + delay
                for index, when in list(restart_at.items()):
                    if now >= when:
                        del restart_at[index]
                        self.spawn(index)
                time.sleep(0.1)
            return 0
        finally:
            self.stop_all()

    def stop_all(self, timeout_s: float = 20.0) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.0, deadline - time.monotonic()))
            if child.poll() is None:
                child.kill()
                child.wait(5)
