"""The monitor's use cases over declared interfaces (:mod:`tollgate_monitor.ports`): versions and their
reference profiles, the inference-log windows (counting, closing on event time or the wall clock, judging
drift and performance, alerting and asking for retraining), the label join and the staleness check. Nothing
here imports Kafka, HTTP or PostgreSQL; :mod:`tollgate_monitor.app` wires it to them."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter

from tollgate_core.alerts import AlertEvent, AlertKind, AlertPayload, AlertState
from tollgate_core.contracts import ContractRegistry, DatasetContract, FieldType
from tollgate_core.events import utcnow
from tollgate_core.kafka import OutRecord, Record, TransientError, dead_letter
from tollgate_core.lifecycle import CandidateEvent, LifecycleEvent
from tollgate_core.pii import PiiRedactor
from tollgate_core.reference import ReferenceProfile, label_key
from tollgate_core.registrations import Applied
from tollgate_core.topics import Topics, current_schema_id
from tollgate_monitor import SERVICE
from tollgate_monitor.alerts import alert_id, event_id, severity, wants_retraining
from tollgate_monitor.drift import Layout
from tollgate_monitor.evaluate import Labeled, Thresholds, alert_event, judge, observe, training_request
from tollgate_monitor.ports import (
    BatchWrite,
    DeadLetters,
    LabelRow,
    MonitorStorage,
    PredictionRow,
    Retrain,
    StaleCheckpoint,
    VersionInfo,
)
from tollgate_monitor.processor import LogEntry, PartitionState, ingest, parse_entry
from tollgate_monitor.settings import MonitorSettings
from tollgate_monitor.windows import Series


class ReferenceMissing(TransientError):
    """Inference records of a version whose reference profile has not arrived yet: retry the batch."""


def positive_key(contract: DatasetContract) -> str | None:
    """The label value counted as the positive class of a binary classifier (None: not binary)."""
    label = contract.label
    if label.task != "classification":
        return None
    if label.positive_class is not None:
        return label_key(label.positive_class)
    if label.type is FieldType.BOOLEAN:
        return "true"
    if label.type is FieldType.CATEGORY and label.categories and len(label.categories) == 2:
        return str(label.categories[1])
    if label.type in (FieldType.INTEGER, FieldType.NUMBER):
        return "1"
    return None


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "tollgate_monitor_records", "Inference records by outcome", ["outcome"], registry=registry
        )
        self.windows = Counter("tollgate_monitor_windows", "Windows judged", ["model"], registry=registry)
        self.alerts = Counter(
            "tollgate_monitor_alerts", "Alert events", ["model", "kind", "state"], registry=registry
        )
        self.labels = Counter("tollgate_monitor_labels", "Labels by outcome", ["outcome"], registry=registry)
        self.retrains = Counter(
            "tollgate_monitor_training_requests", "Training requests queued", ["model"], registry=registry
        )


class MonitorCore:
    """What one monitor replica decides, over its storage and its dead-letter publisher."""

    def __init__(
        self,
        settings: MonitorSettings,
        store: MonitorStorage,
        dead_letters: DeadLetters,
        metrics_registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dead_letters = dead_letters
        self.topics = Topics(settings.topic_namespace)
        self.thresholds = Thresholds.from_settings(settings)
        self.contracts = ContractRegistry.from_directory(settings.contracts_dir)
        self.redactors = {
            c.schema_id: PiiRedactor(c, settings.pii_key.get_secret_value().encode()) for c in self.contracts
        }
        self.metrics = MonitorMetrics(metrics_registry)
        self.alert_schema = current_schema_id("monitor.alerts")
        self.request_schema = current_schema_id("training.requests")
        self.layouts: dict[Series, Layout] = {}
        self.versions: dict[Series, VersionInfo] = {}
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        # Per partition: one batch or wall-clock close at a time, and when its last batch was processed.
        self._partition_locks: dict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._last_batch: dict[tuple[str, int], float] = {}
        self._missing_since: dict[Series, float] = {}

    def contract_registered(self, applied: Applied) -> None:
        """A contract registered live: its personal-data rules and the layouts built from it are renewed."""
        if applied.kind != "contract":
            return
        contract = self.contracts.get(applied.name)
        if contract is not None:
            key = self.settings.pii_key.get_secret_value().encode()
            self.redactors[applied.name] = PiiRedactor(contract, key)
        self.layouts.clear()

    # ---------------------------------------------------------------------------------------- versions

    async def on_candidate(self, body: bytes) -> None:
        """Store each version's reference profile and holdout metrics (upsert by version)."""
        event = CandidateEvent.model_validate_json(body)
        await self.store.upsert_candidate(event.payload)
        self._forget((event.payload.model, event.payload.version))

    async def on_lifecycle(self, body: bytes) -> None:
        """Store each version's stage (production, staging, ...): alerts and retraining depend on it."""
        event = LifecycleEvent.model_validate_json(body)
        await self.store.upsert_lifecycle(event.payload, event.occurred_at)
        self.versions.pop((event.payload.model, event.payload.version), None)

    def _forget(self, series: Series) -> None:
        self.layouts.pop(series, None)
        self.versions.pop(series, None)

    async def layout_for(self, series: Series) -> Layout | None:
        layout = self.layouts.get(series)
        if layout is not None:
            return layout
        info = await self.store.version(*series)
        if info is None or info.reference is None:
            return None
        layout = self.layouts[series] = Layout.from_reference(ReferenceProfile.model_validate(info.reference))
        self.versions[series] = info
        self._missing_since.pop(series, None)
        return layout

    async def version_info(self, series: Series) -> VersionInfo | None:
        info = self.versions.get(series)
        if info is None:
            info = await self.store.version(*series)
            if info is not None:
                self.versions[series] = info
        return info

    # ------------------------------------------------------------------------------------ inference log

    async def _state(self, topic: str, partition: int) -> PartitionState:
        key = (topic, partition)
        state = self.partitions.get(key)
        if state is None:
            doc = await self.store.load_partition(topic, partition)
            s = self.settings
            if doc is None:
                state = PartitionState(topic, partition, s.window_seconds, s.window_buckets)
            else:
                for item in doc.get("series", []):
                    await self.layout_for((item["model"], item["version"]))
                state = PartitionState.from_json(
                    topic, partition, doc, self.layouts.get, s.window_seconds, s.window_buckets
                )
            self.partitions[key] = state
        return state

    async def on_inference(self, records: list[Record]) -> None:
        by_partition: dict[tuple[str, int], list[Record]] = defaultdict(list)
        for rec in records:
            by_partition[(rec.topic, rec.partition)].append(rec)
        for (topic, partition), recs in by_partition.items():
            key = (topic, partition)
            async with self._partition_locks[key]:
                try:
                    state = await self._state(topic, partition)
                    await self._process(state, recs)
                    self._last_batch[key] = time.monotonic()
                except Exception:
                    # The in-memory state may hold part of this batch: reload it from the checkpoint next time.
                    self.partitions.pop(key, None)
                    raise

    async def _process(self, state: PartitionState, recs: list[Record]) -> None:
        s = self.settings
        expected = state.last_offset
        entries: list[LogEntry] = []
        dead: list[OutRecord] = []
        for rec in recs:
            if rec.offset <= expected:
                self.metrics.records.labels("redelivered").inc()
                continue
            try:
                entries.append(parse_entry(rec.offset, rec.value))
            except Exception as exc:  # unreadable record: dead-lettered, never blocks the partition
                dead.append(dead_letter(rec, self.topics.dlq(SERVICE), SERVICE, exc))
        if recs[-1].offset <= expected:
            return

        unknown: set[Series] = set()
        now = time.monotonic()
        for series in {(e.model, e.version) for e in entries}:
            if await self.layout_for(series) is None:
                since = self._missing_since.setdefault(series, now)
                if now - since < s.reference_wait_seconds:
                    raise ReferenceMissing(f"no reference profile yet for {series[0]} v{series[1]}; retrying")
                unknown.add(series)
        if dead:
            await self.dead_letters.publish(dead)

        result = ingest(state, entries, self.layouts.get, frozenset(unknown))
        state.last_offset = max(state.last_offset, recs[-1].offset)
        self.metrics.records.labels("counted").inc(result.accepted)
        self.metrics.records.labels("late").inc(result.late)
        self.metrics.records.labels("unreferenced").inc(
            sum(1 for e in entries if (e.model, e.version) in unknown)
        )
        self.metrics.records.labels("dead_lettered").inc(len(dead))
        predictions = [
            PredictionRow(
                e.request_id,
                e.model,
                e.version,
                e.contract,
                e.entity_id,
                None if e.score != e.score else e.score,
                e.predicted,
                datetime.fromtimestamp(e.at, tz=UTC),
            )
            for e in entries
            if (e.model, e.version) not in unknown and e.offset > expected
        ]
        await self._judge(state, expected, state.watermark, predictions)

    async def close_idle(self, assignment: Iterable[TopicPartition]) -> int:
        """Let event time pass with the wall clock in every partition of ``assignment`` (those this replica
        holds) that received nothing for ``idle_close_seconds``, and judge the windows that closes (with the
        labels that arrived meanwhile): a window ends when its period has passed, traffic or not. Returns
        the windows judged.

        The partition's event time advances by the wall-clock time since its last batch (from its newest
        event time then), so a live stream's windows close at their end (plus lateness, the idle time and one
        check interval) and a replay of old events that pauses is not cut short. A partition with a backlog
        keeps receiving batches and is never idle, so none of its records turn late this way.
        """
        s = self.settings
        judged = 0
        for tp in sorted(assignment, key=lambda tp: (tp.topic, tp.partition)):
            key = (tp.topic, tp.partition)
            idle = time.monotonic() - self._last_batch.setdefault(key, time.monotonic())
            if idle < s.idle_close_seconds:
                continue
            async with self._partition_locks[key]:
                try:
                    state = await self._state(tp.topic, tp.partition)
                    if state.book.buckets and math.isfinite(state.watermark):
                        passed = state.watermark + idle
                        judged += await self._judge(state, state.last_offset, passed, [])
                except StaleCheckpoint:  # another replica took the partition over: its state is newer
                    self.partitions.pop(key, None)
                except Exception:
                    self.partitions.pop(key, None)
                    raise
        return judged

    async def _judge(
        self, state: PartitionState, expected: int, watermark: float, predictions: list[PredictionRow]
    ) -> int:
        """Judge the windows closed by ``watermark`` and checkpoint the partition with them (atomically).

        A batch always checkpoints (its offsets moved); a wall-clock close (no predictions) only when a
        window closed. Returns the windows judged.
        """
        s = self.settings
        reports: list[dict[str, Any]] = []
        alerts: list[AlertEvent] = []
        retrains: list[Retrain] = []
        due = list(state.book.due(watermark, s.allowed_lateness_seconds))
        if not due and expected == state.last_offset:
            return 0  # a wall-clock check that closed nothing: the checkpoint stays as it is
        stages = await self.store.stages() if due else {}
        for window in due:
            series = (window.model, window.version)
            info = await self.version_info(series)
            labeled = await self._labeled(window.model, window.version, window.start, window.end, info)
            report = judge(self.layouts[series], window, self.thresholds, labeled)
            stage = stages.get(series, "unknown")
            for change in observe(report, state.series_states(series), self.thresholds):
                event = alert_event(change, report, stage, SERVICE, self.alert_schema, utcnow())
                alerts.append(event)
                self.metrics.alerts.labels(window.model, change.kind.value, change.state.value).inc()
                if wants_retraining(change.kind, change.state, stage) and info is not None and info.contract:
                    retrains.append(
                        Retrain(
                            training_request(event, info.contract, self.request_schema, SERVICE, utcnow()),
                            s.retrain_cooldown_seconds,
                        )
                    )
            reports.append(report.to_json())
            self.metrics.windows.labels(window.model).inc()

        queued = await self.store.commit_batch(
            BatchWrite(
                topic=state.topic,
                partition=state.partition,
                expected_offset=expected,
                state=state.to_json(),
                predictions=predictions,
                windows=reports,
                alerts=alerts,
                alerts_topic=self.topics.monitor_alerts,
                retrains=retrains,
                requests_topic=self.topics.training_requests,
            )
        )
        for retrain in retrains[:queued]:
            self.metrics.retrains.labels(retrain.event.payload.model).inc()
        return len(due)

    async def _labeled(
        self, model: str, version: str, start: float, end: float, info: VersionInfo | None
    ) -> Labeled | None:
        """Predictions of the version whose labels arrived within the window (binary or regression)."""
        if info is None or info.task is None:
            return None
        scores, truth = await self.store.labeled(model, version, start, end)
        threshold = (info.reference or {}).get("decision_threshold")
        return Labeled(info.task, scores, truth, info.metrics, threshold)

    # ------------------------------------------------------------------------------------------- labels

    async def on_labels(self, records: list[Record]) -> list[tuple[Record, BaseException]]:
        rows: list[LabelRow] = []
        refused: list[tuple[Record, BaseException]] = []
        for rec in records:
            try:
                doc = orjson.loads(rec.value or b"")
                if not isinstance(doc, dict):
                    raise TypeError(f"not a validated event: a JSON {type(doc).__name__}")
                if not doc.get("labeled"):
                    continue
                contract = self.contracts.get(doc["schema"])
                if contract is None:
                    continue
                payload = doc["payload"]
                if not isinstance(payload, dict):
                    raise TypeError(f"payload must be an object, got a JSON {type(payload).__name__}")
                value = payload.get(contract.label.name)
                if value is None:
                    continue
                rows.append(self._label_row(contract, doc, value))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not a validated event
                self.metrics.labels.labels("unreadable").inc()
                refused.append((rec, exc))  # dead-lettered by the runtime before the offsets commit
        joined = await self.store.join_labels(rows)
        self.metrics.labels.labels("received").inc(len(rows))
        self.metrics.labels.labels("joined").inc(joined)
        return refused

    def _label_row(self, contract: DatasetContract, doc: dict[str, Any], value: Any) -> LabelRow:
        label = label_key(value)
        positive = positive_key(contract)
        truth: float | None
        if contract.label.task == "regression":
            truth = float(value)
        else:
            truth = None if positive is None else float(label == positive)
        entity = self.redactors[contract.schema_id].value(contract.entity_id.name, doc.get("entity_id"))
        request_id = doc["payload"].get("request_id")
        return LabelRow(
            contract.schema_id,
            None if entity is None else str(entity),
            None if request_id is None else str(request_id),
            label,
            truth,
            datetime.fromisoformat(doc["occurred_at"]),
        )

    # ---------------------------------------------------------------------------------------- staleness

    async def check_staleness(self, now: datetime | None = None) -> list[AlertEvent]:
        """Raise or clear the staleness alert of every production version (model age, time since a label)."""
        now = now or utcnow()
        s = self.settings
        changed = []
        for row in await self.store.production_versions():
            trained = row["trained_at"]
            since = row["last_label"] or row["stage_changed_at"] or trained
            age = (now - trained).total_seconds() if trained else 0.0
            gap = (now - since).total_seconds() if since else 0.0
            bad = age > s.max_model_age_seconds or gap > s.max_label_gap_seconds
            state, current = await self.store.alert_state(
                row["model"], row["version"], AlertKind.STALENESS.value
            )
            if bad == (state == AlertState.RAISED.value):
                continue
            new_state = AlertState.RAISED if bad else AlertState.CLEARED
            aid = (
                alert_id(row["model"], row["version"], AlertKind.STALENESS.value, now.timestamp())
                if bad
                else current
            )
            assert aid is not None
            reasons = []
            if age > s.max_model_age_seconds:
                reasons.append(
                    f"trained {age / 86400:.1f} days ago (limit {s.max_model_age_seconds / 86400:.1f})"
                )
            if gap > s.max_label_gap_seconds:
                reasons.append(
                    f"no label for {gap / 3600:.1f} h (limit {s.max_label_gap_seconds / 3600:.1f} h)"
                )
            summary = (
                "stale: " + "; ".join(reasons) if bad else "fresh again: recent labels and a young model"
            )
            event = AlertEvent(
                event_id=event_id(aid, new_state),
                event_type=f"alert_{new_state.value}",
                schema_=self.alert_schema,
                occurred_at=now,
                producer=SERVICE,
                payload=AlertPayload(
                    alert_id=aid,
                    model=row["model"],
                    version=row["version"],
                    stage="production",
                    kind=AlertKind.STALENESS,
                    state=new_state,
                    severity=severity(AlertKind.STALENESS, "production"),
                    summary=summary,
                    windows=1,
                    window_start=since or now,
                    window_end=now,
                    metrics={"age_seconds": age, "seconds_since_label": gap},
                ),
            )
            if await self.store.set_alert(event, self.topics.monitor_alerts, expected_state=state):
                changed.append(event)
                self.metrics.alerts.labels(row["model"], AlertKind.STALENESS.value, new_state.value).inc()
        return changed

    async def housekeeping(self) -> None:
        """One staleness check, then forget predictions whose label can no longer arrive."""
        await self.check_staleness()
        await self.store.expire_predictions(self.settings.label_join_ttl_seconds)
