"""Prometheus metrics, read at scrape time from plain counters the hot path increments.

A ``prometheus_client`` Counter costs a lock and a label lookup per increment; the scoring path instead bumps
ints in dicts (``ScoringStats``, the inference log's counters) and this collector turns them into metric
families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tollgate_core.kafka import StageStats
from tollgate_scorer.core import LATENCY_BUCKETS_MS, ScoringStats
from tollgate_scorer.follower import LifecycleFollower
from tollgate_scorer.inference_log import InferenceLog
from tollgate_scorer.manager import ModelManager
from tollgate_scorer.routing import ModelTable

P = "tollgate_scorer_"


class ScorerCollector(Collector):
    def __init__(
        self,
        stats: ScoringStats,
        table: ModelTable,
        manager: ModelManager,
        inference_log: InferenceLog | None,
        follower: Callable[[], LifecycleFollower | None],
        stage: Callable[[], StageStats | None],
        reused_request_ids: Callable[[], int] = lambda: 0,
    ) -> None:
        self._stats = stats
        self._table = table
        self._manager = manager
        self._log = inference_log
        self._follower = follower
        self._stage = stage
        self._reused = reused_request_ids

    def collect(self) -> Iterator[Metric]:
        yield from self._scoring()
        yield from self._models()
        if self._log is not None:
            yield from self._inference_log(self._log)
        stage = self._stage()
        if stage is not None:
            for name, value, what in (
                ("kafka_requests_consumed", stage.consumed, "Kafka scoring requests consumed and committed"),
                ("kafka_records_produced", stage.produced, "Results and dead letters committed"),
                ("kafka_batches_aborted", stage.aborted, "Kafka scoring batches rolled back and retried"),
            ):
                counter = CounterMetricFamily(P + name, what)
                counter.add_metric([], value)
                yield counter
        reused = CounterMetricFamily(
            P + "reused_request_ids",
            "Kafka scoring requests whose request id came back from another Kafka position within the "
            "reuse window (each still scored and logged with event ids of its own)",
        )
        reused.add_metric([], self._reused())
        yield reused
        for name, value, what in (
            (
                "coalesced_requests",
                self._stats.coalesced_requests,
                "Single-row HTTP requests scored with the others of their event-loop turn",
            ),
            (
                "coalesced_batches",
                self._stats.coalesced_batches,
                "Batches those requests were scored in (requests / batches: the mean batch size)",
            ),
        ):
            counter = CounterMetricFamily(P + name, what)
            counter.add_metric([], value)
            yield counter

    def _scoring(self) -> Iterator[Metric]:
        stats = self._stats
        inferences = CounterMetricFamily(
            P + "inferences",
            "Inferences made (one per instance and version)",
            labels=["model", "version", "route", "channel"],
        )
        for key, value in list(stats.inferences.items()):
            inferences.add_metric([str(v) for v in key], value)
        yield inferences
        invalid = CounterMetricFamily(
            P + "invalid_requests", "Requests refused by the dataset contract", labels=["model", "channel"]
        )
        for pair, value in list(stats.invalid.items()):
            invalid.add_metric([str(v) for v in pair], value)
        yield invalid
        failures = CounterMetricFamily(
            P + "failed_requests", "Requests that could not be scored, by reason", labels=["model", "code"]
        )
        for reason, value in list(stats.failures.items()):
            failures.add_metric(list(reason), value)
        yield failures
        shadow = CounterMetricFamily(
            P + "shadow_failures", "Shadow runs that could not score (answer unaffected)", labels=["model"]
        )
        for model, value in list(stats.shadow_failures.items()):
            shadow.add_metric([model], value)
        yield shadow
        latency = HistogramMetricFamily(
            P + "request_duration_seconds",
            "Time to route, validate, run and log one request inside the scorer",
            labels=["model", "channel"],
        )
        for (model, channel), cell in list(stats.latency.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(LATENCY_BUCKETS_MS, cell[2:], strict=False):
                cumulative += count
                buckets.append((repr(bound / 1000.0), cumulative))
            buckets.append(("+Inf", cell[0]))
            latency.add_metric([model, str(channel)], buckets, cell[1] / 1000.0)
        yield latency

    def _models(self) -> Iterator[Metric]:
        serving = GaugeMetricFamily(
            P + "serving",
            "Versions served: 1 per (model, version, stage)",
            labels=["model", "version", "stage"],
        )
        weight = GaugeMetricFamily(
            P + "canary_weight", "Share of entities routed to staging", labels=["model"]
        )
        shadow = GaugeMetricFamily(P + "shadow", "1 when staging is scored in shadow", labels=["model"])
        for route in self._table:
            for stage, model in (("production", route.production), ("staging", route.staging)):
                if model is not None:
                    serving.add_metric([route.name, model.version, stage], 1)
            weight.add_metric([route.name], route.canary_buckets / 10_000)
            shadow.add_metric([route.name], 1 if route.shadow else 0)
        yield from (serving, weight, shadow)
        loads = CounterMetricFamily(P + "model_loads", "Versions loaded and warmed up", labels=["model"])
        for name, value in list(self._manager.loads.items()):
            loads.add_metric([name], value)
        failed = CounterMetricFamily(
            P + "model_load_failures", "Versions that could not be served", labels=["model"]
        )
        for name, value in list(self._manager.load_failures.items()):
            failed.add_metric([name], value)
        swaps = CounterMetricFamily(P + "route_swaps", "Route changes applied", labels=["model"])
        for name, value in list(self._manager.swaps.items()):
            swaps.add_metric([name], value)
        yield from (loads, failed, swaps)
        follower = self._follower()
        if follower is not None:
            events = CounterMetricFamily(
                P + "lifecycle_events",
                "Lifecycle records read (invalid ones dead-lettered)",
                labels=["valid"],
            )
            events.add_metric(["true"], follower.events - follower.invalid)
            events.add_metric(["false"], follower.invalid)
            yield events

    def _inference_log(self, log: InferenceLog) -> Iterator[Metric]:
        for name, value, what in (
            ("logged", log.logged, "Inferences recorded for the log by the scoring path"),
            ("produced", log.produced, "Log events handed to the Kafka producer (replays included)"),
            ("acked", log.acked, "Log events acknowledged by Kafka (replays included)"),
            ("failed", log.failed, "Log events whose send failed; they were spooled, not lost"),
            ("spooled", log.spooled, "Log events written to the local spool"),
            ("replayed", log.replayed, "Spooled log events acknowledged by Kafka"),
            ("dropped", log.dropped, "Log events dropped because the spool was full (policy drop)"),
        ):
            counter = CounterMetricFamily(P + "inference_log_" + name, what)
            counter.add_metric([], value)
            yield counter
        refused = CounterMetricFamily(
            P + "requests_refused", "Requests refused because the spool was full (policy refuse)"
        )
        refused.add_metric([], log.refused)
        yield refused
        backlog = GaugeMetricFamily(
            P + "inference_log_backlog", "Log events not yet acknowledged", labels=["where"]
        )
        backlog.add_metric(["memory"], log.backlog - log.spool.records)
        backlog.add_metric(["spool"], log.spool.records)
        yield backlog
        size = GaugeMetricFamily(P + "inference_log_spool_bytes", "Bytes in the spool not yet replayed")
        size.add_metric([], log.spool.bytes)
        yield size
        up = GaugeMetricFamily(P + "inference_log_kafka_up", "1 while the log producer reaches Kafka")
        up.add_metric([], 1 if log.kafka_up else 0)
        yield up
